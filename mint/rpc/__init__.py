"""What every MinT gRPC server shares: bearer-token and client-certificate
authentication, the one mapping from domain errors to status codes, TLS, and a server
with a health port of its own and a stop that drains."""
