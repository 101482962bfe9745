"""Long-running work: the persistent job engine, its runner, the job kinds,
and the Service API operations started as jobs."""
