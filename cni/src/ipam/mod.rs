//! IP address management: the built-in allocator and delegation to IPAM plugins.
