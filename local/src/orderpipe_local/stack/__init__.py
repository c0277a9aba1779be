"""Reading template.yaml and creating its resources on an AWS endpoint."""
