"""The AWS endpoint: moto in server mode, with the patches the pipeline needs."""
