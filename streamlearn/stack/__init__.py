"""streamlearn/stack"""
