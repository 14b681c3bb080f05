"""Allow ``python -m sbt_batch``."""

from sbt_batch.cli import main

if __name__ == "__main__":
    main()
