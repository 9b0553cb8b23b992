//! Amazon Bedrock (`kind = "bedrock"`).

pub mod eventstream;
