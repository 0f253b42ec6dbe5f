//! `verify`: build the standard lab, load a policy's rendering, and prove the
//! reachability the policy promises with real packets.
