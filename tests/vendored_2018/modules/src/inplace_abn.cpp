// stand-in for the published source file of the same name (see ../../README.md)
