"""The advisors' chat sidebar (聊天工具栏): an H5 page WeCom opens beside a conversation.

It checks what the advisor is about to send before it reaches the customer, shows who
the customer is, and sends approved replies — signed in by WeCom (``auth``), wired to
the WeCom client by the JS-SDK (``views``), its use cases in ``flows``.
"""
