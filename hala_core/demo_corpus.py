"""A small built-in English/Arabic corpus: enough text to train the demo tokenizer offline.

Written for this project (Apache-2.0, like the demo models). Parallel sentence pairs, so the same
lines also serve as translation prompts in demos. Nothing here is meant to be read as data.
"""

from __future__ import annotations

PAIRS: tuple[tuple[str, str], ...] = (
    ("Good morning.", "صباح الخير."),
    ("Good evening, how are you?", "مساء الخير، كيف حالك؟"),
    ("What is the capital of Egypt?", "ما هي عاصمة مصر؟"),
    ("The capital of Egypt is Cairo.", "عاصمة مصر هي القاهرة."),
    ("I am learning the Arabic language.", "أنا أتعلم اللغة العربية."),
    ("The weather is beautiful today.", "الطقس جميل اليوم."),
    ("Where is the library?", "أين المكتبة؟"),
    ("The library is next to the school.", "المكتبة بجانب المدرسة."),
    ("I drink coffee every morning.", "أشرب القهوة كل صباح."),
    ("My brother works as a doctor in the hospital.", "يعمل أخي طبيباً في المستشفى."),
    ("The students read the book in class.", "قرأ الطلاب الكتاب في الصف."),
    ("Please translate this sentence into English.", "من فضلك ترجم هذه الجملة إلى الإنجليزية."),
    ("Translate to Arabic: Good morning.", "ترجم إلى العربية: صباح الخير."),
    ("The sun rises in the east.", "تشرق الشمس من الشرق."),
    ("Water boils at one hundred degrees.", "يغلي الماء عند مئة درجة."),
    ("The train leaves at seven o'clock.", "يغادر القطار في الساعة السابعة."),
    ("We visited the museum yesterday.", "زرنا المتحف أمس."),
    ("The city is large and crowded.", "المدينة كبيرة ومزدحمة."),
    ("She wrote a long letter to her friend.", "كتبت رسالة طويلة إلى صديقتها."),
    ("How much does this book cost?", "كم ثمن هذا الكتاب؟"),
    ("The market opens early in the morning.", "يفتح السوق في الصباح الباكر."),
    ("Science helps us understand the world.", "يساعدنا العلم على فهم العالم."),
    ("The teacher explained the lesson clearly.", "شرح المعلم الدرس بوضوح."),
    ("I would like a cup of tea, please.", "أريد كوباً من الشاي من فضلك."),
    ("The river flows through the valley.", "يجري النهر عبر الوادي."),
    ("Reading is a good habit.", "القراءة عادة جيدة."),
    ("The children are playing in the garden.", "الأطفال يلعبون في الحديقة."),
    ("My father travelled to Riyadh last week.", "سافر أبي إلى الرياض الأسبوع الماضي."),
    ("The meeting starts after lunch.", "يبدأ الاجتماع بعد الغداء."),
    ("Computers process information quickly.", "تعالج الحواسيب المعلومات بسرعة."),
    ("A language model predicts the next word.", "يتنبأ النموذج اللغوي بالكلمة التالية."),
    ("Machine translation has improved a lot.", "تحسنت الترجمة الآلية كثيراً."),
    ("The doctor advised him to rest.", "نصحه الطبيب بالراحة."),
    ("We need more data to train the model.", "نحتاج إلى مزيد من البيانات لتدريب النموذج."),
    ("The answer is correct.", "الإجابة صحيحة."),
    ("The question is difficult but interesting.", "السؤال صعب لكنه مثير للاهتمام."),
    ("Write a short story about a cat.", "اكتب قصة قصيرة عن قطة."),
    ("The cat sleeps on the chair.", "تنام القطة على الكرسي."),
    ("Summarize the following paragraph.", "لخص الفقرة التالية."),
    ("The desert is hot during the day and cold at night.", "الصحراء حارة في النهار وباردة في الليل."),
    ("Dates are a popular fruit in the Gulf.", "التمر فاكهة شائعة في الخليج."),
    ("The sea is calm this evening.", "البحر هادئ هذا المساء."),
    ("He plays football with his friends.", "يلعب كرة القدم مع أصدقائه."),
    ("The airport is far from the city centre.", "المطار بعيد عن وسط المدينة."),
    ("Thank you very much for your help.", "شكراً جزيلاً على مساعدتك."),
    ("You are welcome.", "على الرحب والسعة."),
    ("What time is it now?", "كم الساعة الآن؟"),
    ("It is three thirty in the afternoon.", "إنها الثالثة والنصف بعد الظهر."),
    ("The exam will be next Sunday.", "سيكون الامتحان يوم الأحد القادم."),
    ("Mathematics is the language of science.", "الرياضيات لغة العلوم."),
    ("The moon shines at night.", "يضيء القمر في الليل."),
    ("Plants need water and light.", "تحتاج النباتات إلى الماء والضوء."),
    ("The company opened a new office in Dubai.", "افتتحت الشركة مكتباً جديداً في دبي."),
    ("The news was published this morning.", "نُشر الخبر هذا الصباح."),
    ("Arabic is written from right to left.", "تُكتب العربية من اليمين إلى اليسار."),
    ("The poem describes the beauty of nature.", "تصف القصيدة جمال الطبيعة."),
    ("Health is more important than wealth.", "الصحة أهم من الثروة."),
    ("Knowledge is light.", "العلم نور."),
    ("Patience is the key to relief.", "الصبر مفتاح الفرج."),
    ("Explain the answer step by step.", "اشرح الإجابة خطوة بخطوة."),
    ("Choose the correct answer: A, B, C or D.", "اختر الإجابة الصحيحة: أ، ب، ج أو د."),
    ("The number of students is 25.", "عدد الطلاب ٢٥ طالباً."),
)

ENGLISH: tuple[str, ...] = tuple(en for en, _ in PAIRS)
ARABIC: tuple[str, ...] = tuple(ar for _, ar in PAIRS)


def corpus_lines() -> list[str]:
    """A few hundred deterministic lines: each side alone, both sides together, and chat-like lines."""
    lines: list[str] = []
    lines.extend(ENGLISH)
    lines.extend(ARABIC)
    for i, (en, ar) in enumerate(PAIRS):
        lines.append(f"English: {en}\nArabic: {ar}")
        lines.append(f"ترجم إلى الإنجليزية: {ar} → {en}")
        lines.append(f"Q{i + 1}: {en.lower()} {ar}")
        nxt_en, nxt_ar = PAIRS[(i + 7) % len(PAIRS)]
        lines.append(f"{ar} {nxt_ar}")
        lines.append(f"{en} {nxt_en}")
    return lines
