from cl.cli import main
import sys

sys.exit(main())
