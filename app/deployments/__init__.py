"""Hosted deployments: records in the database, served by `app.serving` in each API process.

`POST /v1/deployments` records a `pending` deployment and, once that is committed, starts its
warm-up in the background (verify, extract, load, dummy batch), which ends `ready` or
`failed` with a message. `POST /v1/deployments/{id}/predict` answers through the process's
micro-batcher; `DELETE` unloads it. See docs/SERVING.md.
"""
