//! anyk's training worker: computes one gradient per held block with tch (libtorch) on CPU or
//! CUDA and streams each to the parameter server as soon as it is ready.

pub mod corrupt;
pub mod data;
pub mod evaluate;
pub mod export;
pub mod model;
pub mod numerics;
pub mod run;
pub mod straggle;
