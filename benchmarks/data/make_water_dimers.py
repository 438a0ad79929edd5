"""GFN2-xTB water dimers (tblite) for testing long-range electrostatics in ML potentials.

Runs in a separate venv holding tblite (not the project's):

    python3 -m venv /work/tblite-venv && /work/tblite-venv/bin/pip install tblite ase numpy
    /work/tblite-venv/bin/python benchmarks/data/make_water_dimers.py

Writes benchmarks/data/water_dimers/{train,test,binding_curve}.xyz (extxyz) and prints the
statistics reported in SOURCE.txt. Units: eV, Angstrom, eV/Angstrom, e, e*Angstrom.
Atom order in every frame: O H H (molecule 1), O H H (molecule 2). Non-periodic.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import ase
import ase.io
import ase.units
import numpy as np
import tblite.library
from ase.optimize import BFGS
from tblite.ase import TBLite
from tblite.interface import Calculator

HARTREE = ase.units.Hartree  # eV
BOHR = ase.units.Bohr  # Angstrom
METHOD = "GFN2-xTB"
ACCURACY = 0.01  # tblite "accuracy" (default 1.0; smaller = tighter SCF/integral thresholds)
ETEMP = 300.0  # K, electronic temperature (tblite default)
NUMBERS_MONO = np.array([8, 1, 1])
N_FRAMES = 400
N_TRAIN = 320
D_MIN, D_MAX = 2.6, 12.0  # O-O distance range, Angstrom
MIN_INTER = 1.5  # Angstrom, minimum intermolecular distance (O..O, H..H)
MIN_HO = 1.4  # Angstrom, minimum intermolecular H..O distance
NOISE = 0.02  # Angstrom, Gaussian noise per Cartesian component
N_CURVE = 40
BASE_SEED = 20240602


def singlepoint(numbers, positions_ang):
    """GFN2-xTB energy (eV), forces (eV/A), partial charges (e), dipole (e*A)."""
    calc = Calculator(METHOD, np.asarray(numbers), np.asarray(positions_ang) / BOHR)
    calc.set("verbosity", 0)
    calc.set("accuracy", ACCURACY)
    calc.set("temperature", ETEMP * ase.units.kB / HARTREE)
    res = calc.singlepoint()
    e = float(res.get("energy")) * HARTREE
    f = -np.asarray(res.get("gradient")) * HARTREE / BOHR
    q = np.asarray(res.get("charges"), dtype=np.float64)
    mu = np.asarray(res.get("dipole"), dtype=np.float64) * BOHR
    return e, f, q, mu


def tblite_ase():
    return TBLite(method=METHOD, accuracy=ACCURACY, electronic_temperature=ETEMP, verbosity=0)


def optimised_monomer():
    """GFN2-xTB minimum of H2O, started from the experimental geometry (0.9572 A, 104.52 deg)."""
    th = math.radians(104.52)
    pos = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [0.9572 * math.cos(th), 0.9572 * math.sin(th), 0.0]])
    m = ase.Atoms(numbers=NUMBERS_MONO, positions=pos)
    m.calc = tblite_ase()
    BFGS(m, logfile=None).run(fmax=1e-4, steps=500)
    pos = m.get_positions()
    pos -= pos[0]  # O at the origin
    return pos


def optimised_dimer(mono):
    """GFN2-xTB minimum of (H2O)2, started from a linear donor-acceptor arrangement."""
    donor = mono.copy()
    # orient donor: O at origin, one O-H bond along +x
    b = donor[1] / np.linalg.norm(donor[1])
    donor = donor @ _rotation_to(b, np.array([1.0, 0.0, 0.0])).T
    acc = mono.copy()
    # acceptor: bisector along +x (H atoms pointing away from the donor), plane tilted
    bis = acc[1] + acc[2]
    acc = acc @ _rotation_to(bis / np.linalg.norm(bis), np.array([1.0, 0.0, 0.0])).T
    acc = acc @ _axis_rotation(np.array([0.0, 0.0, 1.0]), math.radians(0.0)).T
    acc = acc @ _axis_rotation(np.array([0.0, 1.0, 0.0]), math.radians(-55.0)).T
    acc += np.array([2.9, 0.0, 0.0])
    d = ase.Atoms(numbers=np.concatenate([NUMBERS_MONO, NUMBERS_MONO]), positions=np.vstack([donor, acc]))
    d.calc = tblite_ase()
    BFGS(d, logfile=None).run(fmax=1e-4, steps=1000)
    return d.get_positions()


def _axis_rotation(axis, angle):
    axis = axis / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _rotation_to(a, b):
    """Rotation matrix taking unit vector a onto unit vector b."""
    v = np.cross(a, b)
    c = float(a @ b)
    if np.linalg.norm(v) < 1e-12:
        if c > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(perp) < 1e-6:
            perp = np.cross(a, [0.0, 1.0, 0.0])
        return _axis_rotation(perp, math.pi)
    return _axis_rotation(v, math.atan2(np.linalg.norm(v), c))


def random_rotation(rng):
    """Uniformly random rotation matrix (normalised Gaussian quaternion)."""
    w, x, y, z = (lambda v: v / np.linalg.norm(v))(rng.standard_normal(4))
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _too_close(pos):
    a, b = pos[:3], pos[3:]
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    ho = np.array([[z1 + z2 == 9 for z2 in NUMBERS_MONO] for z1 in NUMBERS_MONO])
    return bool(np.any(d[ho] < MIN_HO) or np.any(d[~ho] < MIN_INTER))


def random_dimer(rng, mono):
    while True:
        d_oo = rng.uniform(D_MIN, D_MAX)
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        m1 = mono @ random_rotation(rng).T
        m2 = mono @ random_rotation(rng).T + d_oo * u
        pos = np.vstack([m1, m2])
        if _too_close(pos):
            continue
        pos = pos + NOISE * rng.standard_normal(pos.shape)
        if _too_close(pos):
            continue
        return pos, d_oo


def label(pos, **info):
    pos = np.round(pos, 8)  # what extxyz stores (%16.8f): label exactly the stored positions
    numbers = np.concatenate([NUMBERS_MONO, NUMBERS_MONO])
    e, f, q, mu = singlepoint(numbers, pos)
    e1 = singlepoint(NUMBERS_MONO, pos[:3])[0]
    e2 = singlepoint(NUMBERS_MONO, pos[3:])[0]
    atoms = ase.Atoms(numbers=numbers, positions=pos, pbc=False)
    atoms.info["REF_energy"] = e
    atoms.info["REF_monomer1_energy"] = e1
    atoms.info["REF_monomer2_energy"] = e2
    atoms.info["REF_interaction_energy"] = e - e1 - e2
    atoms.info["REF_d_OO"] = float(np.linalg.norm(pos[3] - pos[0]))
    atoms.info["REF_dipole"] = mu
    atoms.info["charge"] = 0
    atoms.info.update(info)
    atoms.arrays["REF_forces"] = f
    atoms.arrays["REF_charges"] = q
    return atoms


def check_units(mono):
    """ASE calculator (eV, eV/A) vs interface + our conversions; forces vs finite differences."""
    out = []
    rng = np.random.default_rng(12345)
    pos, _ = random_dimer(rng, mono)
    numbers = np.concatenate([NUMBERS_MONO, NUMBERS_MONO])
    e, f, q, mu = singlepoint(numbers, pos)
    at = ase.Atoms(numbers=numbers, positions=pos)
    at.calc = tblite_ase()
    out.append(
        f"interface vs tblite.ase.TBLite: |dE|={abs(at.get_potential_energy() - e):.1e} eV, "
        f"max|dF|={np.abs(at.get_forces() - f).max():.1e} eV/A"
    )
    h = 1e-4
    fn = np.zeros_like(pos)
    for i in range(len(pos)):
        for a in range(3):
            p = pos.copy()
            p[i, a] += h
            ep = singlepoint(numbers, p)[0]
            p[i, a] -= 2 * h
            em = singlepoint(numbers, p)[0]
            fn[i, a] = -(ep - em) / (2 * h)
    out.append(
        f"forces vs central FD (h={h} A): max|dF|={np.abs(fn - f).max():.1e} eV/A (max|F|={np.abs(f).max():.2f})"
    )
    mu_q = q @ pos
    out.append(
        f"sum of charges={q.sum():.1e} e; dipole={np.round(mu, 4)} e*A, "
        f"point-charge dipole sum q_i r_i={np.round(mu_q, 4)} e*A"
    )
    out.append(f"rotation invariance: E(rot)-E={singlepoint(numbers, pos @ random_rotation(rng).T)[0] - e:.1e} eV")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=BASE_SEED)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "water_dimers"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"tblite {'.'.join(map(str, tblite.library.get_version()))}, {METHOD}, accuracy={ACCURACY}, T_el={ETEMP} K",
        flush=True,
    )

    mono = optimised_monomer()
    roh = np.linalg.norm(mono[1:] - mono[0], axis=1)
    ang = math.degrees(math.acos((mono[1] @ mono[2]) / (roh[0] * roh[1])))
    e_mono = singlepoint(NUMBERS_MONO, mono)[0]
    print(f"monomer: O-H = {roh[0]:.4f} {roh[1]:.4f} A, HOH = {ang:.2f} deg, E = {e_mono:.6f} eV", flush=True)

    for line in check_units(mono):
        print("[check]", line, flush=True)

    # random dimers
    rng = np.random.default_rng(args.seed)
    frames = []
    for i in range(N_FRAMES):
        pos, d_draw = random_dimer(rng, mono)
        frames.append(label(pos, frame_index=i))
    perm = np.random.default_rng(args.seed + 1).permutation(N_FRAMES)
    train = [frames[i] for i in sorted(perm[:N_TRAIN])]
    test = [frames[i] for i in sorted(perm[N_TRAIN:])]

    # binding curve: rigid monomers of the GFN2-xTB optimised dimer, O-O axis scan
    dim = optimised_dimer(mono)
    d_eq = np.linalg.norm(dim[3] - dim[0])
    e_eq = singlepoint(np.concatenate([NUMBERS_MONO, NUMBERS_MONO]), dim)[0]
    e_int_eq = e_eq - singlepoint(NUMBERS_MONO, dim[:3])[0] - singlepoint(NUMBERS_MONO, dim[3:])[0]
    print(f"optimised dimer: d_OO = {d_eq:.4f} A, E_int = {e_int_eq * 1000:.2f} meV", flush=True)
    axis = (dim[3] - dim[0]) / d_eq
    curve = []
    for d in np.linspace(D_MIN, D_MAX, N_CURVE):
        pos = dim.copy()
        pos[3:] += (d - d_eq) * axis
        curve.append(label(pos, curve_index=len(curve)))

    for name, fr in (("train.xyz", train), ("test.xyz", test), ("binding_curve.xyz", curve)):
        ase.io.write(out / name, fr, format="extxyz")
        back = ase.io.read(out / name, ":")
        assert len(back) == len(fr)
        for a, ref in zip(back, fr):
            assert a.calc is None
            for k in ("REF_energy", "REF_interaction_energy", "REF_d_OO"):
                assert abs(a.info[k] - ref.info[k]) < 1e-6, k
            assert np.allclose(a.info["REF_dipole"], ref.info["REF_dipole"], atol=1e-6)
            assert np.allclose(a.arrays["REF_forces"], ref.arrays["REF_forces"], atol=1e-7)
            assert np.allclose(a.arrays["REF_charges"], ref.arrays["REF_charges"], atol=1e-7)
            assert a.info["charge"] == 0 and not a.pbc.any()
    print("read-back OK", flush=True)

    # statistics
    def stats(fr, tag):
        E = np.array([a.info["REF_energy"] for a in fr])
        Ei = np.array([a.info["REF_interaction_energy"] for a in fr])
        d = np.array([a.info["REF_d_OO"] for a in fr])
        F = np.concatenate([a.arrays["REF_forces"] for a in fr])
        print(
            f"{tag}: n={len(fr)}  E=[{E.min():.4f}, {E.max():.4f}] eV"
            f"  E_int=[{Ei.min() * 1e3:.1f}, {Ei.max() * 1e3:.1f}] meV"
            f"  |F| max={np.linalg.norm(F, axis=1).max():.3f} eV/A, component rms={F.std():.3f} eV/A"
            f"  d_OO=[{d.min():.2f}, {d.max():.2f}] A"
        )
        for lo, hi in ((2.6, 3.0), (3.0, 4.0), (4.0, 5.0), (5.0, 6.0), (6.0, 8.0), (8.0, 10.0), (10.0, 12.01)):
            m = (d >= lo) & (d < hi)
            if m.any():
                print(
                    f"    d_OO in [{lo:4.1f},{hi:5.1f}): n={m.sum():3d}  E_int mean={Ei[m].mean() * 1e3:8.2f} meV"
                    f"  mean|E_int|={np.abs(Ei[m]).mean() * 1e3:7.2f}  max|E_int|={np.abs(Ei[m]).max() * 1e3:7.2f} meV"
                )

    stats(frames, "all random dimers")
    stats(train, "train")
    stats(test, "test")
    print("binding curve (d_OO A, E_int meV):")
    for a in curve:
        print(f"    {a.info['REF_d_OO']:6.3f}  {a.info['REF_interaction_energy'] * 1e3:9.3f}")


if __name__ == "__main__":
    main()
