import sys

from tools.prove.cli import main

sys.exit(main())
