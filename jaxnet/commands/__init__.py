"""The command lines of jaxnet: console commands ``jaxnet-<name>`` and ``scripts/<name>.py``."""
