//! Persistence: detect the distro's boot-time loader and install rules where it reads them.
