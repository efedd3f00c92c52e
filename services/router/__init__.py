"""The router: the front door for `Inference`. It sends each request to a node where all
of its adapters are resident, and on a miss asks the controller for placement and waits
(a cold start) within the request's deadline."""
