import sys

from nnpes.cli import main

sys.exit(main())
