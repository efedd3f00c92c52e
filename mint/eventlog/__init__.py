"""The event log's pure parts: the protobuf codec (with upcasting), envelopes and the
hash chain, and the `EventLog` port that every back end implements."""
