"""The update loop: an adapter's update requests turned into revisions, evaluated and
promoted or held, one stage (one event) at a time (DESIGN.md, "The update loop").

`port` is what the loop needs from the registry (in process, or over gRPC from the
`mint-trainer` stream processor); `tuning` trains a revision with PEFT; `scoring` scores
examples through the serving engine's Score path; `loop` runs the stages, each once.
"""
