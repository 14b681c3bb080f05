"""Allow ``python -m sbt_batch``."""

import sys

try:
    from sbt_batch.cli import main
except KeyboardInterrupt:  # Ctrl-C while the CLI is still loading: nothing was written yet
    sys.stderr.write("error: interrupted (SIGINT)\n")
    sys.exit(130)

if __name__ == "__main__":
    main()
