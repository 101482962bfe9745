"""What every context shares: validation, sizes, paging, value types,
row helpers and the refusals several contexts raise."""
