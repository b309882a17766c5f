"""Deployment records. Serving (warm-up, predict) arrives with the serving issue; until then a
deployment is created `pending` and nothing pretends to answer predictions."""
