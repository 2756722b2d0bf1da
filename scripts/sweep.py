#!/usr/bin/env python3
"""The same as the console command jaxnet-sweep (jaxnet/commands/sweep.py)."""
from jaxnet.commands.sweep import main

if __name__ == "__main__":
    main()
