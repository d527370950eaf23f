import sys

from zactor.cli import main

sys.exit(main())
