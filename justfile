# Convenience aliases for the xtask commands.

# Run the main job end to end on generated content.
demo:
    cargo xtask demo

# Format check, clippy, the demo and every test.
test *ARGS:
    cargo xtask test {{ARGS}}

# Build the ferry binary.
build:
    cargo build -p ferry

# ferry vs skopeo and the machine's floors; regenerates docs/benchmarks.md.
bench *ARGS:
    cargo xtask bench {{ARGS}}

# The cargo-fuzz targets (nightly), N seconds each; see docs/fuzzing.md.
fuzz *ARGS:
    cargo xtask fuzz {{ARGS}}
