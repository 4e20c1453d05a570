"""Images: references, the content-addressed store, image configs, importing."""
