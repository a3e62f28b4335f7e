"""The small built-in corpus and example queries `hfkit search` uses when given none."""

CORPUS = (
    "The cat sleeps on the warm windowsill all afternoon.",
    "A dog chased the ball across the park.",
    "The stock market fell sharply after the interest rate announcement.",
    "Investors are moving their savings into government bonds.",
    "The recipe needs two cups of flour, sugar and three eggs.",
    "Slow-cooked tomato sauce tastes better the next day.",
    "The football team won the championship in extra time.",
    "She ran the marathon in under three hours.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "The telescope captured images of a galaxy billions of light-years away.",
    "Python is a popular programming language for data science.",
    "The compiler reported a type error on line 42.",
    "Heavy rain and strong winds are expected over the weekend.",
    "The glacier has retreated several kilometres in the last century.",
    "The museum opened a new exhibition of impressionist paintings.",
    "The orchestra performed Beethoven's ninth symphony last night.",
    "The train to Paris was delayed by forty minutes.",
    "Remember to renew your passport before travelling abroad.",
    "Regular exercise and sleep lower the risk of heart disease.",
    "The doctor prescribed antibiotics for the infection.",
)

QUERIES = (
    "How is the economy doing?",
    "a pet resting in the sun",
    "What should I cook for dinner?",
    "space exploration",
)
