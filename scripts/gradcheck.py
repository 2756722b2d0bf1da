#!/usr/bin/env python3
"""The same as the console command jaxnet-gradcheck (jaxnet/commands/gradcheck.py)."""
from jaxnet.commands.gradcheck import main

if __name__ == "__main__":
    main()
