"""The command line: serving and the operator verbs."""
