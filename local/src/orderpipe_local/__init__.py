"""`orderpipe local`: the whole pipeline on one machine, without Docker or an AWS account."""
