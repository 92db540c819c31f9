"""Sub-commands of `lwz`: each module exposes `register(subparsers)`."""
