#!/usr/bin/env python3
"""The same as the console command jaxnet-get-cifar10 (jaxnet/commands/get_cifar10.py)."""
from jaxnet.commands.get_cifar10 import main

if __name__ == "__main__":
    main()
