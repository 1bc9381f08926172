"""Acquisition sources: one thread per camera, writing RGB frames into the ring.

* `synthetic.SyntheticSource`: simulated battery line (ground truth carried)
* `replay.ReplaySource`: folder of images / linewatch dataset / video file
* `genicam.GenicamSource`: GenICam/GenTL cameras via harvesters (`camera` extra)

Each takes its camera's profile table (`linewatch.profile.SyntheticCamera`, `ReplayCamera`,
`GenicamCamera`); `camera.make_source(profile)` builds the source of a `[[camera]]` table (the
one factory: the daemon, the bench and the tests use it or the source classes directly). The
source kinds are `linewatch.profile.SOURCES`. `base` holds the `Source` protocol and the thread
loop, `frames` the pixel formats and the frame writer, `pacer` the frame-rate pacer. Importing
this package imports none of the sources (harvesters is only imported when a GenICam camera
opens). See docs/acquisition.md.
"""
