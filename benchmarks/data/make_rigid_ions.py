"""Synthetic rigid-ion (Na+/Cl-) boxes with Gaussian-smeared Coulomb + short-range repulsion.

Reference data for testing long-range electrostatics in ML potentials. Labels are
computed here in plain numpy (Ewald summation written for this script); nothing
from nnpes is imported.

    python benchmarks/data/make_rigid_ions.py            # regenerate train.xyz / test.xyz
    python benchmarks/data/make_rigid_ions.py --check    # only run the self-checks

Units: eV, Angstrom, eV/Angstrom, eV/Angstrom^3 (ASE stress sign: stress = (1/V) dE/dstrain).

Physics (see SOURCE.txt for the full description):
  E = E_coul + E_rep
  E_coul = 1/2 sum'_{i,j,n} q_i q_j ke erf(|r_ij + n| / (2 sigma)) / |r_ij + n|   (no Gaussian self energy)
  E_rep  = sum_{i<j, r<rc} [u(r) - u(rc) - (r - rc) u'(rc)],   u(r) = 4 eps (s / r)^12
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import ase
import ase.io
import numpy as np
from scipy.special import erfc  # scipy is a dependency of ase

# ----------------------------------------------------------------------------- constants
KE = 14.3996454784  # e^2 / (4 pi eps0), eV * Angstrom
SIGMA = 1.0  # Gaussian charge width (standard deviation), Angstrom
BETA = 1.0 / (2.0 * SIGMA)  # pair interaction erf(BETA r) / r
EPS_REP = 0.01  # eV
S_REP = 2.2  # Angstrom
RC_REP = 4.0  # Angstrom
KB = 8.617333262e-5  # eV / K
N_NA = 64
N_CL = 64
BOX = 14.0  # Angstrom
R_MIN = 2.0  # Angstrom, rejection-sampling minimum distance
T_MC = 2000.0  # K
N_MC_STEPS = 50
MC_NOISE = 0.06  # Angstrom, sqrt(2 tau) of the MALA proposal
N_TRAIN = 160
N_TEST = 40
BASE_SEED = 20240601
# Ewald truncation: neglected Gaussian factors below ~1e-20
EWALD_TOL_EXP = 46.0  # exp(-46) ~ 1e-20
ERFC_X_MAX = 6.5  # erfc(6.5) ~ 4e-20


# ----------------------------------------------------------------------------- helpers
def _min_image(d: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Minimum-image displacement for an orthorhombic cell (row vectors)."""
    inv = np.linalg.inv(cell)
    f = d @ inv
    f -= np.round(f)
    return f @ cell


def _kvectors(cell: np.ndarray, alpha: float) -> np.ndarray:
    """Half-space set of reciprocal vectors k != 0 with exp(-k^2/(4 alpha^2)) above ~1e-20."""
    recip = 2.0 * np.pi * np.linalg.inv(cell).T  # rows b_i with a_i . b_j = 2 pi delta_ij
    kmax = 2.0 * alpha * math.sqrt(EWALD_TOL_EXP)
    nmax = [int(math.ceil(kmax * np.linalg.norm(cell[i]) / (2.0 * np.pi))) for i in range(3)]
    r = [np.arange(-m, m + 1) for m in nmax]
    n = np.stack(np.meshgrid(*r, indexing="ij"), axis=-1).reshape(-1, 3)
    half = (n[:, 0] > 0) | ((n[:, 0] == 0) & (n[:, 1] > 0)) | ((n[:, 0] == 0) & (n[:, 1] == 0) & (n[:, 2] > 0))
    k = n[half] @ recip
    k2 = np.einsum("ij,ij->i", k, k)
    return k[k2 <= kmax * kmax]


def coulomb(positions, charges, cell, alpha=None, want_forces=True):
    """Ewald sum of the Gaussian-smeared Coulomb energy.

    Splits erf(BETA r)/r = erf(alpha r)/r + [erfc(alpha r) - erfc(BETA r)]/r.
    alpha = None uses alpha = BETA, where the real-space part vanishes identically.
    Returns (energy, forces, dE/dstrain 3x3)."""
    if alpha is None:
        alpha = BETA
    R = np.asarray(positions, dtype=np.float64)
    q = np.asarray(charges, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    V = abs(np.linalg.det(cell))
    N = len(q)
    F = np.zeros((N, 3))
    W = np.zeros((3, 3))  # dE/dstrain

    # reciprocal space: (2 pi / V) sum_{k != 0} exp(-k^2/4a^2)/k^2 |S(k)|^2  (half space x2)
    k = _kvectors(cell, alpha)
    k2 = np.einsum("ij,ij->i", k, k)
    w = np.exp(-k2 / (4.0 * alpha * alpha)) / k2
    E_rec = 0.0
    chunk = 4096
    for s in range(0, len(k), chunk):
        kk, ww, kk2 = k[s : s + chunk], w[s : s + chunk], k2[s : s + chunk]
        ph = R @ kk.T  # (N, nk)
        c, sn = np.cos(ph), np.sin(ph)
        Sre, Sim = q @ c, q @ sn
        S2 = Sre * Sre + Sim * Sim
        E_rec += 2.0 * (2.0 * np.pi / V) * np.sum(ww * S2)
        if want_forces:
            # F_i = (4 pi / V) q_i sum_k w k Im(S* e^{i k r_i}), x2 for the half space
            im = sn * Sre[None, :] - c * Sim[None, :]  # (N, nk)
            F += 2.0 * (4.0 * np.pi / V) * q[:, None] * ((im * ww[None, :]) @ kk)
            # dE/deps_ab = -delta_ab E + (2pi/V) sum S2 w 2 k_a k_b (1/(4a^2) + 1/k^2)
            fac = 2.0 * (2.0 * np.pi / V) * S2 * ww * 2.0 * (1.0 / (4.0 * alpha * alpha) + 1.0 / kk2)
            W += (kk * fac[:, None]).T @ kk
    if want_forces:
        W -= np.eye(3) * E_rec

    # self term of the alpha-Gaussian split
    E_self = -alpha / math.sqrt(math.pi) * np.sum(q * q)

    # real space: [erfc(alpha r) - erfc(BETA r)] / r over all images within rc
    E_real = 0.0
    if abs(alpha - BETA) > 1e-14:
        rc = ERFC_X_MAX / min(alpha, BETA)
        D0 = _min_image(R[None, :, :] - R[:, None, :], cell)  # d_ij = r_j - r_i
        L = np.min(np.linalg.norm(cell, axis=1))
        m = int(math.ceil(rc / L + 0.5))
        qq = q[:, None] * q[None, :]
        rng = np.arange(-m, m + 1)
        for n in np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), -1).reshape(-1, 3):
            D = D0 + n @ cell
            r = np.linalg.norm(D, axis=-1)
            mask = r < rc
            if not np.any(n):
                np.fill_diagonal(mask, False)
            if not mask.any():
                continue
            rr, dd, qm = r[mask], D[mask], qq[mask]
            g = (erfc(alpha * rr) - erfc(BETA * rr)) / rr
            E_real += 0.5 * np.sum(qm * g)
            if want_forces:
                gp = (
                    2.0
                    / math.sqrt(math.pi)
                    * (BETA * np.exp(-BETA * BETA * rr * rr) - alpha * np.exp(-alpha * alpha * rr * rr))
                ) / rr - g / rr
                coef = qm * gp / rr
                Fm = np.zeros((N, N, 3))
                Fm[mask] = coef[:, None] * dd
                F += Fm.sum(axis=1)
                W += 0.5 * (dd * coef[:, None]).T @ dd

    E = KE * (E_rec + E_self + E_real)
    return E, KE * F, KE * W


def repulsion(positions, cell, want_forces=True):
    """Shifted-force 4 eps (s/r)^12 for r < RC_REP (minimum image; RC_REP < L/2)."""
    R = np.asarray(positions, dtype=np.float64)
    N = len(R)
    D = _min_image(R[None, :, :] - R[:, None, :], cell)
    r = np.linalg.norm(D, axis=-1)
    iu = np.triu_indices(N, 1)
    mask = np.zeros((N, N), bool)
    mask[iu] = r[iu] < RC_REP
    rr = r[mask]
    u = lambda x: 4.0 * EPS_REP * (S_REP / x) ** 12
    du = lambda x: -12.0 * u(x) / x
    E = np.sum(u(rr) - u(RC_REP) - (rr - RC_REP) * du(RC_REP))
    F = np.zeros((N, 3))
    W = np.zeros((3, 3))
    if want_forces:
        vp = du(rr) - du(RC_REP)
        dd = D[mask]
        coef = vp / rr  # F_i += coef d_ij, F_j -= coef d_ij
        i, j = np.nonzero(mask)
        np.add.at(F, i, coef[:, None] * dd)
        np.add.at(F, j, -coef[:, None] * dd)
        W = (dd * coef[:, None]).T @ dd
    return E, F, W


def energy_forces_stress(positions, charges, cell, alpha=None, want_forces=True):
    Ec, Fc, Wc = coulomb(positions, charges, cell, alpha, want_forces)
    Er, Fr, Wr = repulsion(positions, cell, want_forces)
    V = abs(np.linalg.det(cell))
    return Ec + Er, Fc + Fr, (Wc + Wr) / V


def energy(positions, charges, cell, alpha=None):
    return energy_forces_stress(positions, charges, cell, alpha, want_forces=False)[0]


# ----------------------------------------------------------------------------- structures
def random_positions(rng, n, L, rmin):
    pos = np.zeros((0, 3))
    cell = np.eye(3) * L
    tries = 0
    while len(pos) < n:
        tries += 1
        if tries > 1_000_000:
            raise RuntimeError("rejection sampling failed")
        x = rng.uniform(0.0, L, size=3)
        if len(pos):
            d = _min_image(pos - x, cell)
            if np.min(np.einsum("ij,ij->i", d, d)) < rmin * rmin:
                continue
        pos = np.vstack([pos, x])
    return pos


def mala(rng, pos, q, cell, n_steps, kT, noise):
    """Metropolis-adjusted Langevin (all atoms moved per step) on the total energy."""
    tau = 0.5 * noise * noise
    E, F, _ = energy_forces_stress(pos, q, cell)
    acc = 0
    for _ in range(n_steps):
        mean = pos + tau * F / kT
        new = mean + noise * rng.standard_normal(pos.shape)
        E2, F2, _ = energy_forces_stress(new, q, cell)
        back = new + tau * F2 / kT
        logq_fwd = -np.sum((new - mean) ** 2) / (4.0 * tau)
        logq_bwd = -np.sum((pos - back) ** 2) / (4.0 * tau)
        loga = -(E2 - E) / kT + logq_bwd - logq_fwd
        if math.log(rng.uniform()) < loga:
            pos, E, F = new, E2, F2
            acc += 1
    pos = pos % cell[0, 0]  # wrap (cubic)
    return pos, acc / n_steps


def make_frame(index, seed):
    rng = np.random.default_rng([seed, index])
    cell = np.eye(3) * BOX
    q = np.array([1.0] * N_NA + [-1.0] * N_CL)
    numbers = np.array([11] * N_NA + [17] * N_CL)
    pos = random_positions(rng, N_NA + N_CL, BOX, R_MIN)
    pos, acc = mala(rng, pos, q, cell, N_MC_STEPS, KB * T_MC, MC_NOISE)
    pos = np.round(pos, 8)  # what extxyz stores (%16.8f): label exactly the stored positions
    E, F, S = energy_forces_stress(pos, q, cell)
    atoms = ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
    atoms.info["REF_energy"] = float(E)
    atoms.info["REF_stress"] = S
    atoms.info["charge"] = 0
    atoms.info["frame_seed"] = f"{seed}:{index}"
    atoms.arrays["REF_forces"] = F
    atoms.arrays["REF_charges"] = q
    d = _min_image(pos[None] - pos[:, None], cell)
    r = np.linalg.norm(d, axis=-1) + np.eye(len(q)) * 1e9
    return atoms, acc, r.min()


# ----------------------------------------------------------------------------- checks
def self_check(seed):
    out = []
    rng = np.random.default_rng([seed, 999999])
    cell = np.eye(3) * BOX
    q = np.array([1.0] * N_NA + [-1.0] * N_CL)
    pos = random_positions(rng, N_NA + N_CL, BOX, R_MIN)
    pos, _ = mala(rng, pos, q, cell, 10, KB * T_MC, MC_NOISE)

    # (1) Ewald alpha independence: energy, forces, stress
    res = {a: energy_forces_stress(pos, q, cell, alpha=a) for a in (0.35, 0.5, 0.7, 0.9)}
    E0, F0, S0 = res[0.5]
    for a, (E, F, S) in res.items():
        out.append(
            f"alpha={a:4.2f}: E_total={E:.10f} eV  |dE|/|E|={abs(E - E0) / abs(E0):.2e}  "
            f"max|dF|={np.abs(F - F0).max():.2e} eV/A  max|dS|={np.abs(S - S0).max():.2e} eV/A^3"
        )
    # (2) absolute normalisation: one +1/-1 pair (r = 2 A) in a 100 A box. Ewald omits k = 0
    # (tin-foil boundary); adding 2 pi |M|^2 / (3 V) gives the spherically summed lattice, whose
    # image terms vanish to O(L^-5), so it must equal the isolated pair -ke erf(r/(2 sigma))/r.
    qp = np.array([1.0, -1.0])
    for Lb, a in ((100.0, 0.08), (100.0, 0.12), (200.0, 0.06)):
        big = np.eye(3) * Lb
        pp = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]) * Lb + np.array([[0.0, 0.0, 0.0], [1.2, 1.6, 0.0]])
        r12 = np.linalg.norm(pp[1] - pp[0])
        Ep = coulomb(pp, qp, big, alpha=a, want_forces=False)[0]
        M = qp @ pp
        Ep += KE * 2.0 * np.pi * (M @ M) / (3.0 * Lb**3)
        exact = -KE * math.erf(r12 / (2.0 * SIGMA)) / r12
        out.append(
            f"isolated pair (r={r12:.1f} A, L={Lb:.0f} A, alpha={a}): Ewald+dipole term={Ep:.10f} eV, "
            f"analytic={exact:.10f} eV, diff={Ep - exact:.1e}"
        )

    # (3) forces vs central finite differences (all 384 coordinates)
    h = 1e-4
    Fn = np.zeros_like(pos)
    for i in range(len(pos)):
        for a in range(3):
            p = pos.copy()
            p[i, a] += h
            ep = energy(p, q, cell)
            p[i, a] -= 2 * h
            em = energy(p, q, cell)
            Fn[i, a] = -(ep - em) / (2 * h)
    out.append(
        f"forces vs central FD (h={h} A, all {pos.size} components): max|dF|={np.abs(Fn - F0).max():.2e} eV/A, "
        f"max|F|={np.abs(F0).max():.3f} eV/A"
    )
    # (4) stress vs central FD of homogeneous strain of cell and positions
    hs = 1e-5
    V = abs(np.linalg.det(cell))
    Sn = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] += 0.5 * hs
            eps[b, a] += 0.5 * hs
            ep = energy(pos @ (np.eye(3) + eps), q, cell @ (np.eye(3) + eps))
            em = energy(pos @ (np.eye(3) - eps), q, cell @ (np.eye(3) - eps))
            Sn[a, b] = (ep - em) / (2 * hs) / V
    out.append(
        f"stress vs central FD of strain (h={hs}): max|dS|={np.abs(Sn - S0).max():.2e} eV/A^3, "
        f"max|S|={np.abs(S0).max():.3e} eV/A^3"
    )
    # (5) translation invariance / force sum
    out.append(f"sum of forces: {np.abs(F0.sum(0)).max():.2e} eV/A")
    # (6) continuity of the repulsion at the cutoff
    out.append(f"repulsion at r=rc-1e-6: E={_rep_pair(RC_REP - 1e-6):.2e} eV")
    return out


def _rep_pair(r):
    u = lambda x: 4.0 * EPS_REP * (S_REP / x) ** 12
    du = lambda x: -12.0 * u(x) / x
    return u(r) - u(RC_REP) - (r - RC_REP) * du(RC_REP)


# ----------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=BASE_SEED)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "rigid_ions"))
    p.add_argument("--check", action="store_true", help="run the self-checks only")
    p.add_argument("--no-check", action="store_true", help="skip the self-checks")
    args = p.parse_args(argv)

    if not args.no_check:
        for line in self_check(args.seed):
            print("[check]", line, flush=True)
        if args.check:
            return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(N_TRAIN + N_TEST):
        atoms, acc, rmin = make_frame(i, args.seed)
        frames.append(atoms)
        print(
            f"frame {i:3d}: E={atoms.info['REF_energy']:.4f} eV  max|F|={np.abs(atoms.arrays['REF_forces']).max():.3f}"
            f"  P={-np.trace(atoms.info['REF_stress']) / 3 * 160.21766:.3f} GPa  MALA acc={acc:.2f}  r_min={rmin:.3f}",
            flush=True,
        )
    ase.io.write(out / "train.xyz", frames[:N_TRAIN], format="extxyz")
    ase.io.write(out / "test.xyz", frames[N_TRAIN:], format="extxyz")

    # read back: labels must stay plain info/arrays keys, not a calculator's
    for name, n in (("train.xyz", N_TRAIN), ("test.xyz", N_TEST)):
        back = ase.io.read(out / name, ":")
        assert len(back) == n
        for a, ref in zip(back, frames[:N_TRAIN] if name == "train.xyz" else frames[N_TRAIN:]):
            assert a.calc is None
            assert abs(a.info["REF_energy"] - ref.info["REF_energy"]) < 1e-6
            assert np.allclose(np.reshape(a.info["REF_stress"], (3, 3)), ref.info["REF_stress"], atol=1e-9)
            assert np.allclose(a.arrays["REF_forces"], ref.arrays["REF_forces"], atol=1e-7)
            assert np.allclose(a.arrays["REF_charges"], ref.arrays["REF_charges"])
            assert a.info["charge"] == 0
        a = back[0]  # labels belong to the positions as stored in the file
        E, F, S = energy_forces_stress(a.positions, a.arrays["REF_charges"], a.cell.array)
        print(
            f"{name}[0] relabelled from file: |dE|={abs(E - a.info['REF_energy']):.1e} eV  "
            f"max|dF|={np.abs(F - a.arrays['REF_forces']).max():.1e} eV/A  "
            f"max|dS|={np.abs(S - np.reshape(a.info['REF_stress'], (3, 3))).max():.1e} eV/A^3",
            flush=True,
        )
    print("read-back OK", flush=True)


if __name__ == "__main__":
    main()
