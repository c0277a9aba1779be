"""Local execution environments: handlers loaded as Lambda loads them, a fake context, worker pools."""
