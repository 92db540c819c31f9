from lwz.text import count_length, has_cjk


def test_count_length_english_chinese_and_mixed():
    assert count_length("Hello, world! It's 2024.") == 4  # Hello, world, It, s
    assert count_length("你好，世界") == 4
    assert count_length("我爱 Python 和 Rust") == 5
    assert count_length("") == 0


def test_has_cjk():
    assert has_cjk("写一篇文章") and not has_cjk("write an essay")
