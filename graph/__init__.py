"""The image-to-music graph: state, context, nodes, routing and builder (installed as ``image2music.graph``)."""
