"""nrt-mini: a small text-to-audio model and CLAP trained on generated sound scenes."""
