"""Generic parts every Goods-for-Good service uses; nothing here knows a service's domain."""
