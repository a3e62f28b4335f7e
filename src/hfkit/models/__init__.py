"""Model families, the shared encoder, heads and Auto* registries."""
