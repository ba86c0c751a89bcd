//! Switchyard control plane.
