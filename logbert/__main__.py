from logbert.commands import main
import sys

sys.exit(main())
