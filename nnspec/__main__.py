import sys

from nnspec.cli.commands import main

sys.exit(main())
