"""Content-addressed blob storage: the `BlobStore` port."""
