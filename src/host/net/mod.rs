//! Bridges, TAP devices and NAT rules.
