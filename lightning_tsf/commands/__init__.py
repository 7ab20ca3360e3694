"""The ``tsf`` commands: argument parsing and printing on top of the library layers."""
