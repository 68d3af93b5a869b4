"""python -m tools.parallel: the same as scripts/run-parallel."""
import sys

from tools.parallel.cli import main

sys.exit(main())
