import sys

from fsar.cli import main

sys.exit(main())
