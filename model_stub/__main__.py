import sys

from model_stub.server import main

sys.exit(main())
