"""capture's shared-memory ring: one producer, several reader cursors."""
