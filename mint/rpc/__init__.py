"""What every MinT gRPC server shares: bearer-token authentication and the one mapping
from domain errors to status codes."""
