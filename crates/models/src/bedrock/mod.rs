//! Amazon Bedrock (`kind = "bedrock"`).

pub mod credentials;
pub mod eventstream;
pub mod sigv4;
