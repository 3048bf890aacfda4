"""Per-model indexes: the interface (`base`), FAISS files on disk (`store`, `byte_vectors`),
Milvus (`milvus`, `milvus_aliases`) and fused ids `A+B` (`fused`)."""
