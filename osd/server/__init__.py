"""Transport: gRPC servicers, interceptors and the daemon that serves them."""
